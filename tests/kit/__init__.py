"""What many tests build the same way.

* ``exchanges``: ``make_exchange`` / ``make_request`` / ``make_response``, defaults for every part;
* ``procs``: ``Proc``, a child process whose output lines are waited for with a deadline.
"""
