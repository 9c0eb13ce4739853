"""`python -m progan_fast.train ARGS` (and `torchrun ... -m progan_fast.train ARGS`) = `progan-fast train ARGS`."""
import sys

from ..cli import entry

if __name__ == "__main__":
    sys.exit(entry(["train"] + sys.argv[1:]))
