"""Snakepit's Python telemetry API on pitlane's transport.

``pitlane.snakepit.telemetry`` has the public names of Snakepit's ``snakepit_bridge.telemetry``
with the same behaviour; code written for Snakepit changes only its imports::

    from pitlane.snakepit import telemetry          # was: from snakepit_bridge import telemetry

README "Coming from Snakepit" lists what differs.
"""
