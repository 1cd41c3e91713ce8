"""What the core shares with the simulator (the ``rare_sim`` package), which imports it from here:
the core never imports the simulator, only starts it for a dry run (``tasks/llm.py``).

In: nothing. Out: :data:`SIMULATED_FINGERPRINT`, the ``system_fingerprint`` of every simulated
completion and the simulator's own model id (the client marks answers carrying it simulated);
:data:`SIMULATOR_MODEL`, the model name a run without an endpoint asks the simulator for (it
answers to any name).
"""

SIMULATED_FINGERPRINT = "rare-simulator"
SIMULATOR_MODEL = "rare-sim-1"
