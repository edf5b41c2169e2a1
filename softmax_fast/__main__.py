"""``python -m softmax_fast`` runs the same CLI as the ``softmax-fast`` command."""

from softmax_fast.cli import main

if __name__ == "__main__":
    main(prog_name="softmax-fast")
