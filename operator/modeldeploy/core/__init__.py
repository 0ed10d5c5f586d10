"""The pure core: (resource, observed children, now) -> desired objects, new status, actions.

Free of I/O: nothing here imports kopf or kubernetes or reads the clock. `decide`
is the entry; the other modules each hold one rule of docs/behaviour.md.
"""
