"""Transactional emails (the app comes from the project's Celery module)."""

from shop.celery_app import app
from shop.ledger import note


@app.task(queue="emails", ignore_result=True)
def password_reset(user_id, token):
    note("password_reset", user_id, token)
