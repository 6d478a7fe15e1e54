"""The Celery floor: the app as smsq's worker and beat run it (app.py), its boot steps
(relay_timer.py, warm.py), the beat schedule (schedule.py) and beat's locked scheduler
(locked.py)."""
