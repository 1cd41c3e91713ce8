"""``python -m rare_sim``: the simulator on the command line (:func:`rare_sim.process.main`)."""

from rare_sim.process import main

main()
