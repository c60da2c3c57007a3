"""The cancelscope test suite (a package so the modules can share ``tests/_helpers.py``)."""
