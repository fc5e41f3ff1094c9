"""What the federation's two apps share, framework-free (no Flower import): the run config and its mapping to a
learner config (:mod:`.settings`), the federated methods' contract (:mod:`.methods`), scenarios and data shards
(:mod:`.scenarios`) and the global task keys (:mod:`.keys`). ``client/`` and ``server/`` both import this package;
neither imports the other (DESIGN.md §1).
"""
