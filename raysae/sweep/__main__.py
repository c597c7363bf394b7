from raysae.cli import run_main
from raysae.sweep.run import main

if __name__ == "__main__":
    run_main(main)
