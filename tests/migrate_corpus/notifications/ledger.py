"""What the notification actors did, in this process (the codemod test reads it)."""

CALLS: list[tuple[str, tuple, dict]] = []


def note(actor: str, *args: object, **kwargs: object) -> None:
    CALLS.append((actor, args, kwargs))
