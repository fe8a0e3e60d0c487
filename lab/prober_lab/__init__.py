"""The fault lab: a real cluster in Linux network namespaces, with real failure modes."""
