"""Taking items out of a transport's queues without running them, shared by the engines' ``take``.

Each module speaks to one transport with its own client library and knows nothing of an engine's
queue names: the adapters say which keys or queues hold a taskbridge queue and hand them in.
"""
