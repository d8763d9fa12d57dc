"""Planning before launching: will a run fit in the devices' memory (``memory``, ``fit``)."""
