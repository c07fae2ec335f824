"""What many tests build the same way: exchanges, a local HTTP service, a CLI child process.

* ``exchanges``: ``make_exchange`` / ``make_request`` / ``make_response``, defaults for every part;
* ``servers``: ``http_server``, a threaded HTTP server on 127.0.0.1 answering with a function;
* ``procs``: ``Proc``, a child process whose output lines are waited for with a deadline.
"""
