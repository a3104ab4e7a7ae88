"""The dimension methods: a registry of :class:`Method` descriptions, each with its fragment of the stage graph."""
