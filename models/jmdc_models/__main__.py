"""``python -m jmdc_models COMMAND ...`` (or ``jmdc-models COMMAND ...`` after
``pip install -e models/``): one entry point for the tooling.

Commands (each has --help):
  import     export your own PyTorch model as a package, checked against its forward pass
  verify     re-check packages with ONNX Runtime (no PyTorch)
  finalize   hashes + top-1 on the CIFAR-10 test set into the manifest (no PyTorch)
  export     re-export a package from a pipeline run's checkpoints
  pipeline   train, gate, prune, fine-tune and export a zoo model
  prepare    decode the CIFAR-10 JPEG tarball into a .npz
"""

import importlib
import sys

COMMANDS = {
    "import": ("import_cli", "export your own PyTorch model, checked against its forward pass"),
    "verify": ("verify", "re-check packages with ONNX Runtime (no PyTorch)"),
    "finalize": ("finalize", "hashes + top-1 on the CIFAR-10 test set into the manifest"),
    "export": ("export_cli", "re-export a package from a pipeline run's checkpoints"),
    "pipeline": ("pipeline", "train, gate, prune, fine-tune and export a zoo model"),
    "prepare": ("prepare", "decode the CIFAR-10 JPEG tarball into a .npz"),
}


def usage(prog):
    lines = [f"usage: {prog} COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<9}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", f"{prog} COMMAND --help describes one command."]
    return "\n".join(lines)


def main(argv=None, prog=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if prog is None:
        prog = "python -m jmdc_models" if __name__ == "__main__" else "jmdc-models"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog))
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"{prog}: unknown command {cmd!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"jmdc_models.{COMMANDS[cmd][0]}")
    if cmd == "import":
        return mod.main(rest)
    # the other commands' argparse would name themselves after sys.argv[0]
    sys.argv = [f"{prog} {cmd}", *rest]
    return mod.main(rest)


if __name__ == "__main__":
    sys.exit(main())
