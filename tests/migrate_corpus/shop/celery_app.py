"""The shop's Celery application."""

from celery import Celery

app = Celery("shop", broker="redis://127.0.0.1:6379/0")
app.conf.task_serializer = "json"
