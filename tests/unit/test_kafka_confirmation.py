"""The count-down that turns the Kafka acknowledgements of one message's records into one verdict (what
ingest acknowledges the MQTT message on). kafka-python's own Future stands for a record in flight."""

from __future__ import annotations

from kafka.future import Future

from processors.kafka_bus import _Confirmation


class Verdicts(list[BaseException | None]):
    def __call__(self, error: BaseException | None) -> None:
        self.append(error)


def test_told_once_every_record_is_acknowledged_and_not_before_sealing() -> None:
    verdicts = Verdicts()
    confirmation = _Confirmation(verdicts)
    first, second = Future(), Future()
    confirmation.add(first)
    first.success("metadata")
    assert verdicts == []  # the second record is not even added yet
    confirmation.add(second)
    confirmation.seal()
    assert verdicts == []
    second.success("metadata")
    assert verdicts == [None]


def test_records_done_before_sealing_are_told_at_the_seal() -> None:
    verdicts = Verdicts()
    confirmation = _Confirmation(verdicts)
    done = Future().success("metadata")
    confirmation.add(done)
    assert verdicts == []
    confirmation.seal()
    assert verdicts == [None]


def test_a_message_without_records_is_confirmed_at_once() -> None:
    verdicts = Verdicts()
    _Confirmation(verdicts).seal()
    assert verdicts == [None]


def test_the_first_refusal_is_told_at_once_and_only_once() -> None:
    verdicts = Verdicts()
    confirmation = _Confirmation(verdicts)
    records = [Future(), Future(), Future()]
    for record in records:
        confirmation.add(record)
    confirmation.seal()
    refused = RuntimeError("NotEnoughReplicas")
    records[1].failure(refused)
    assert verdicts == [refused]
    records[0].success("metadata")
    records[2].failure(RuntimeError("later"))
    assert verdicts == [refused]


def test_an_abandoned_send_is_never_told() -> None:
    verdicts = Verdicts()
    confirmation = _Confirmation(verdicts)
    record = Future()
    confirmation.add(record)
    confirmation.abandon()  # send() raised: the caller knows from the exception
    record.success("metadata")
    assert verdicts == []
