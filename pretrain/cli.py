"""The `pretrain` command: one entry point whose subcommands share the config system."""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pretrain", description=__doc__)
    parser.add_subparsers(dest="command", title="subcommands")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
