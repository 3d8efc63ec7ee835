"""The index: embedders, the Store protocol and its backends."""
