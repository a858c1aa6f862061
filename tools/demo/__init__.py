"""The built-in demo application: a labeled offline corpus, real packaged teachers, the whole
pipeline, a report."""
