"""Small helpers every layer uses, none of which knows about training, models or data sets.

    files.py       atomic writes, digests, partial folders, file locks
    readback.py    reading back the files mnist-kit keeps (and config files) as the untrusted input they are
    console.py     messages on stderr, progress bars
    provenance.py  timestamps, the command line
    faults.py      fault injection for the crash tests (MNIST_KIT_FAULT)
    interrupts.py  Ctrl-C, SIGTERM and SIGHUP between training steps; children that die with their parent
    addresses.py   the addresses a server (board, serve) may listen on, checked before it starts
    images.py      reading image files safely (formats, pixel limits), resizing

May import: ``errors`` (``UserError``) and the standard library, numpy, Pillow, PyYAML. Nothing else of
mnist-kit: every other package may import this one.
"""
