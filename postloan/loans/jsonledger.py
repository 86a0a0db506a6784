"""A directory of JSON files as the loan ledger's persistence, one file a contract.

``DIR/contracts/<contract_id>.json`` contains the contract (with its state
history) and its money history. Each save writes a temporary file, flushes it
to disk and renames it over the old one, so a crash leaves either the old or
the new file, never a torn one.

`insert` adds new contracts under an exclusive lock on ``DIR/ledger.lock``
and checks their ids, VINs and devices against the stored contracts inside it,
so two imports at once cannot pledge one car twice or fit one tracker to two
cars.

NOTE: `save` takes no lock; two processes saving the same contract at once
lose one of the writes. The SQL store is meant to replace this directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from postloan.loans.contracts import CollateralInUseError, Contract, LiveCollateral
from postloan.loans.history import LoanHistory
from postloan.notify.repository import locked_file

FORMAT = "postloan.loans/1"


class LedgerFileError(ValueError):
    """A ledger file is missing, unreadable or not in the expected format."""


class JsonLedger:
    """Contracts and their histories stored as JSON files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "contracts"

    def _path(self, contract_id: str) -> Path:
        return self.folder / f"{contract_id}.json"

    def contract_ids(self) -> list[str]:
        """Return the ids of all stored contracts, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(path.stem for path in self.folder.glob("*.json"))

    def load(self, contract_id: str) -> tuple[Contract, LoanHistory]:
        """Return one contract and its history; raise LedgerFileError if absent."""
        path = self._path(contract_id)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LedgerFileError(
                f"contract {contract_id!r} not found in the ledger {self.root}"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise LedgerFileError(f"cannot read {path}: {exc}") from exc
        return _decode(path, document)

    def load_all(self) -> dict[str, tuple[Contract, LoanHistory]]:
        """Return every stored contract with its history, by contract id."""
        return {cid: self.load(cid) for cid in self.contract_ids()}

    def insert(self, contracts: Sequence[Contract]) -> dict[str, ValueError]:
        """Save new contracts with empty histories; return the rejected ones' errors.

        A contract is rejected, and nothing of it written, when its id is
        already stored or its VIN or one of its devices belongs to another live
        contract (`VinInUseError`, `DeviceInUseError`). The returned dict maps
        contract ids to errors.
        """
        rejected: dict[str, ValueError] = {}
        with locked_file(self.root / "ledger.lock"):
            stored = {cid: pair[0] for cid, pair in self.load_all().items()}
            live = LiveCollateral(stored.values())
            for contract in contracts:
                if contract.contract_id in stored:
                    rejected[contract.contract_id] = ValueError(
                        f"contract {contract.contract_id!r} is already in the "
                        "ledger; an import never overwrites a contract"
                    )
                    continue
                try:
                    live.check(contract)
                except CollateralInUseError as exc:
                    rejected[contract.contract_id] = exc
                    continue
                self.save(contract, LoanHistory())
                stored[contract.contract_id] = contract
                live.add(contract)
        return rejected

    def save(self, contract: Contract, history: LoanHistory) -> None:
        """Write one contract and its history atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        document = {
            "format": FORMAT,
            "contract": contract.to_record(),
            "history": history.to_record(),
        }
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as output:
                output.write(text)
                output.flush()
                os.fsync(output.fileno())
            os.replace(temporary, self._path(contract.contract_id))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _decode(path: Path, document: Any) -> tuple[Contract, LoanHistory]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise LedgerFileError(f"{path} is not a {FORMAT} ledger file")
    try:
        contract = Contract.from_record(document["contract"])
        history = LoanHistory.from_record(document["history"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerFileError(f"{path} is damaged: {exc!r}") from exc
    return contract, history
