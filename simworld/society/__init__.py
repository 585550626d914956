"""Who is in the simulation and who talks to whom.

The population drawn from personas and the social network.
"""
