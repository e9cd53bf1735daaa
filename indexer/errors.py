"""One exception hierarchy for Jiangxin: every error a user can see carries an actionable message."""

from __future__ import annotations


class JiangxinError(Exception):
    """Base of every error Jiangxin raises on purpose."""


class CorpusError(JiangxinError):
    """A corpus record that cannot be used: where it is (file, line), which field, and why."""

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, reason
        super().__init__(f"{file}:{line}: {field}: {reason}")


class CorpusInvalid(JiangxinError):
    """The corpus holds invalid records and the caller did not allow skipping them."""

    def __init__(self, problems: list[CorpusError]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems[:50])
        more = f"\n… and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(
            f"corpus has {len(problems)} invalid record(s); fix them or pass --skip-invalid:\n{lines}{more}"
        )


class IndexMismatchError(JiangxinError):
    """An index was built with a different model or tokenizer than the one configured."""


class IndexNotFound(JiangxinError):
    """No usable index version exists where one was expected."""


class IndexBusy(JiangxinError):
    """Another process is building an index version in the same folder."""


class WithdrawalPending(IndexBusy):
    """A failed publish's record could not be withdrawn yet (the index busy): its work stays in flight, and recovery
    withdraws the record once the index is free, then gives the work back."""


class IndexCorrupt(JiangxinError):
    """An index version's files do not match its manifest."""


class NotFound(JiangxinError):
    """A requested object (ticket, question, record) does not exist."""


class Forbidden(JiangxinError):
    """The principal may not do this."""


class Conflict(JiangxinError):
    """The object is not in a state that allows this action."""


class QuotaExceeded(JiangxinError):
    """The principal used up a quota (escalations a day); ``retry_after`` is the wait, in seconds, until one frees up."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class DatasetError(JiangxinError):
    """An evaluation data set is missing or malformed (file, line, reason)."""
