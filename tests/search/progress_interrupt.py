"""A progress object that interrupts a search after a number of finished items: how the
search tests simulate a run killed part-way (the results file keeps what was finished)."""


class Interrupt(Exception):
    """Raised by ``StopAfter`` once its count of items has finished."""


class StopAfter:
    """Stands in for the tqdm bar the search asks for; raises ``Interrupt`` after ``count``."""

    def __init__(self, count: int):
        self.left = count

    def __call__(self, stage, total):
        return self

    def update(self, n):
        self.left -= n
        if self.left <= 0:
            raise Interrupt

    def close(self):
        pass
