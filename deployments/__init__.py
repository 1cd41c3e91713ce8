"""How the flow is run: the ``rare`` CLI (``deployments.cli``), ``rare serve``
(``deployments.serve``) and the work-pool deployment (``deployments/prefect.yaml``)."""
