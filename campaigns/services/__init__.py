"""The campaigns app's writers: lifecycle, schedules, runs and the send pipeline.

Topic modules: ``campaigns`` (lifecycle and change log), ``schedules`` (PeriodicTask ownership and cron), ``runs``
(snapshot, tick), ``sending`` (claim, check, render, deliver; ``campaign_send_one`` for journeys), ``winner``.
"""
