"""Using a trained model: freezing it into a checked export, and predicting with that export.

    export.py      a checkpoint frozen into an export folder (Paddle program, ONNX), checked against the run
    inference.py   an export read for prediction: onnxruntime or Paddle Inference (Predictor)
    preprocess.py  people's images brought to the training images' form
    predict.py     mnist-kit predict; reading and answering one image (reader, answer)
    photos.py      photos made from a test set (eval --photos), read back as predict reads files
    app.py         the HTTP API and the drawing pad (static/) as a Flask application: routes, limits, errors
    serve.py       mnist-kit serve: that application under waitress (connections, draining, signals)

May import: ``errors``, ``util``, ``data``, ``backend``, ``experiments``; ``export.py`` also ``models`` and
``evaluation`` (its checks). ``predict``, ``app``, ``serve``, ``inference`` and ``preprocess`` import no training code
and not paddle (tests/test_architecture.py), so predicting from an ONNX export needs no paddle.
"""
