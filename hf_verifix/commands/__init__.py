"""The ``hf-verifix`` command line, one module per subcommand (``correct``, ``evaluate``, ``select``, ``push``,
``env``), each a parser and a short ``run(args)`` calling the library; :mod:`hf_verifix.commands.cli` assembles them
and maps errors to exit codes. Nothing else in the package imports from here.
"""
