from mnist_kit.cli import main

main(prog_name="mnist-kit")
