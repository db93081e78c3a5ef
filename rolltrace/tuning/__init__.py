"""The pure core of ``rolltrace tune``: which settings can be varied (``settings``), the search
over them given a way to run a candidate (``search``), and what it writes: tune.json
(``search.to_json``), tune.html (``output``) and the Deployment patch (``patch``).

Nothing here starts a cluster: the command passes an ``Evaluate`` that runs the scenario, so
the search is tested with a deterministic fake.
"""
