"""The S3 work store on moto: a run's batches file, streamed as one JSON array (one PutObject when it
is small, a multipart upload of 8 MiB parts otherwise, aborted on error), as the Distributed Map's
ItemReader reads it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from energy_auction import codec
from energy_auction.adapters.aws import WORK_PART_BYTES, S3WorkStore
from tests.fakes import FaultyClient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "energy-auction-work"
RUN = "run-20270115T080000Z-dddd"
KEY_BYTES = 128
KEYS_PER_BATCH = 2000
"""A batch of this many keys of KEY_BYTES is about 260 KB of JSON: 33 of them fill a part."""


@pytest.fixture
def s3() -> Iterator[FaultyClient]:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield FaultyClient(client)


def work_store(s3: FaultyClient) -> S3WorkStore:
    # FaultyClient forwards every call to the real client: an S3 client by duck typing.
    return S3WorkStore(cast("S3Client", s3), BUCKET, prefix="work/")


def batch(number: int, keys: int = KEYS_PER_BATCH) -> dict[str, Any]:
    return {"batch": number, "keys": [f"{number:06}/{i:06}".ljust(KEY_BYTES, "k") for i in range(keys)]}


class Batches:
    """A generator of ``count`` big batches that counts how many were taken, and may fail after
    ``fail_after`` of them."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.taken = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for number in range(self.count):
            if number == self.fail_after:
                raise RuntimeError("the pending-orders read failed")
            self.taken += 1
            yield batch(number)


def read_back(s3: FaultyClient, location: dict[str, str]) -> Any:
    body = s3.real.get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
    return json.loads(body)


def nothing_left(s3: FaultyClient) -> bool:
    """No object, and no multipart upload left pending (each would be billed until aborted)."""
    objects = s3.real.list_objects_v2(Bucket=BUCKET)
    uploads = s3.real.list_multipart_uploads(Bucket=BUCKET)
    return objects["KeyCount"] == 0 and not uploads.get("Uploads")


def test_a_small_run_is_one_put_of_the_batches_as_a_json_array(s3: FaultyClient) -> None:
    # Given three batches of a few keys
    batches = [{"batch": n, "keys": [f"trader/o{n}-{i}" for i in range(3)]} for n in range(3)]

    # When the run writes them
    location = work_store(s3).write_batches(RUN, iter(batches))

    # Then they are one JSON object under the run's key, written in one PutObject
    assert location == {"bucket": BUCKET, "key": f"work/runs/{RUN}/batches.json"}
    assert read_back(s3, location) == batches
    assert s3.calls == {"put_object": 1}
    head = s3.real.head_object(Bucket=BUCKET, Key=location["key"])
    assert head["ContentType"] == "application/json"


def test_no_batches_are_an_empty_array(s3: FaultyClient) -> None:
    location = work_store(s3).write_batches(RUN, iter([]))

    assert read_back(s3, location) == []


def test_a_big_run_is_a_multipart_upload_of_8_mib_parts_that_reads_back_the_same(s3: FaultyClient) -> None:
    # Given batches that make about 18 MB of JSON, and a note of each part's size
    sizes: list[int] = []

    def note(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        sizes.append(len(request["Body"]))
        return response

    s3.transform("upload_part", note, times=3)

    # When the run writes them
    location = work_store(s3).write_batches(RUN, Batches(70))

    # Then the file reads back as those batches, written in three parts: two of 8 MiB (and at most a
    # batch more) and the rest
    assert read_back(s3, location) == [batch(n) for n in range(70)]
    assert s3.calls == {"create_multipart_upload": 1, "upload_part": 3, "complete_multipart_upload": 1}
    one_batch = len(codec.dumps(batch(0))) + 1
    assert [WORK_PART_BYTES <= size < WORK_PART_BYTES + one_batch for size in sizes] == [True, True, False]
    assert not s3.real.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert s3.real.head_object(Bucket=BUCKET, Key=location["key"])["ContentType"] == "application/json"


def test_a_big_run_is_uploaded_as_it_is_read_not_held_whole(s3: FaultyClient) -> None:
    # Given batches whose reading is counted, and a record of how many were read at each part's upload
    given = Batches(70)
    read_at_upload: list[int] = []

    def note(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        read_at_upload.append(given.taken)
        return response

    s3.transform("upload_part", note, times=3)

    # When the run writes them
    work_store(s3).write_batches(RUN, given)

    # Then the first part went up once it was full, long before the last batch was read: memory
    # holds about one part, whatever the number of batches
    per_part = -(-WORK_PART_BYTES // len(codec.dumps(batch(0))))
    assert read_at_upload[0] <= per_part + 1
    assert read_at_upload[0] < given.count / 2
    assert read_at_upload == sorted(read_at_upload)
    assert read_at_upload[-1] == given.count


def test_a_failure_mid_stream_aborts_the_upload_and_leaves_nothing(s3: FaultyClient) -> None:
    # Given batches whose reading fails after more than a part was uploaded
    given = Batches(70, fail_after=50)

    # When the run writes them
    with pytest.raises(RuntimeError, match="the pending-orders read failed"):
        work_store(s3).write_batches(RUN, given)

    # Then the upload was aborted: no object, no pending upload
    assert s3.calls["upload_part"] >= 1
    assert s3.calls["abort_multipart_upload"] == 1
    assert "complete_multipart_upload" not in s3.calls
    assert nothing_left(s3)


def test_a_part_s3_refuses_aborts_the_upload_and_raises_its_error(s3: FaultyClient) -> None:
    # Given S3 fails a part's upload
    s3.fail("upload_part", error_code="InternalError")

    # When the run writes its batches
    with pytest.raises(ClientError) as raised:
        work_store(s3).write_batches(RUN, Batches(70))

    # Then the error is S3's (the state machine retries the task), and nothing is left behind
    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert s3.calls["upload_part"] == 1
    assert s3.calls["abort_multipart_upload"] == 1
    assert nothing_left(s3)


def test_a_small_run_that_fails_before_its_put_leaves_nothing(s3: FaultyClient) -> None:
    with pytest.raises(RuntimeError):
        work_store(s3).write_batches(RUN, Batches(5, fail_after=3))

    assert dict(s3.calls) == {}
    assert nothing_left(s3)
