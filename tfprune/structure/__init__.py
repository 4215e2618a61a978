"""A Keras graph as tfprune reads it, knowing nothing of pruning: ``graph`` (the only code touching Keras' private
graph attributes, both stacks: calls, shapes, who feeds whom, call order, cloning) and ``channels`` (the layers that
pass channels through one to one, what shrinking and coupling walk through)."""
