"""The demo (``python -m demo``) and the local launcher (``python -m demo.run``).

Also the process helpers the HTTP end-to-end test and the ingest bench share.
"""
