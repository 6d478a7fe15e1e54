"""The producer API and the Celery tasks behind it.

from smsq.tasks import send_sms, batch_status
"""

from .producer import BatchStatus, Receipt, batch_status, send_sms

__all__ = ["send_sms", "batch_status", "Receipt", "BatchStatus"]
