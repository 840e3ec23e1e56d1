"""The compiled answers: the data path's middle, from registry data to encoded answers.

``options`` (what the table is built from, frozen), ``origins`` (apexes and name
pieces), ``plans`` (per service: candidates, health, weights), ``names`` (which
names a service has), ``evaluation`` (one name, one question, one client place),
``answers`` (encoded responses), ``table`` (lookup: the query side), ``compiler``
(the only writer: batches, on-demand compiles, timers, reload rebuilds). Nothing
here does I/O or reads the clock.
"""
