"""Lightning training: the module (loss, optimizer, EMA), the data module and callbacks.

Only :mod:`vidact.train` and tests import this package; ``vidact.models`` never does.
"""
