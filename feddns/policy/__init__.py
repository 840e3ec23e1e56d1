"""Selection policy: who is asking (locality), what is healthy, and what to answer.

Pure code: no I/O and no clock reads (``now`` is always a parameter), so every
rule is covered by case tables.
"""
