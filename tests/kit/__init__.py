"""What many tests build the same way.

* ``procs``: ``Proc``, a child process whose output lines are waited for with a deadline.
"""
