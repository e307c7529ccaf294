"""L2 state: all device SQL. The device database, arena registrations, the index and its cursor.

Import from the modules (``shoal.state.index``, ``shoal.state.db``, ...): this package imports
none of them, so ``shoal pack``, which needs only ``shoal.state.flist``, does not load the index
and the reconcile rules behind it.
"""
