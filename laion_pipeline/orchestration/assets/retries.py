"""Retries of the steps that use the network: transient trouble (a hub or sheet that does not
answer, after the retries of each request) retries the whole step later, with exponential
backoff; bad settings and bad input fail at once, since the step would fail the same way
again."""

import random
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, Failure, RetryRequested

from laion_pipeline.common.errors import (
    ConfigurationError,
    InvalidInputError,
    NotEnoughDiskError,
    PublishCheckError,
    SourceError,
    StaleInputError,
)
from laion_pipeline.orchestration.resources import NetworkResource

_PERMANENT = (
    ConfigurationError,
    InvalidInputError,
    NotEnoughDiskError,
    PublishCheckError,
    StaleInputError,
)


def step_retry_delay(base_seconds: float, retry_number: int) -> float:
    """Seconds before the next attempt: `base_seconds` doubled for each retry so far, give or
    take a quarter, so that several runs waiting for the same outage do not retry together."""
    return base_seconds * 2**retry_number * random.uniform(0.75, 1.25)


@contextmanager
def retry_transient_errors(
    context: AssetExecutionContext, resource: NetworkResource
) -> Iterator[None]:
    """Ask Dagster to retry the step on a transient error (with backoff, up to the resource's
    `step_retries`); turn every other error of ours into a `Failure` that is not retried."""
    try:
        yield
    except SourceError as error:
        if not error.transient:
            raise Failure(description=str(error), allow_retries=False) from error
        attempt = context.retry_number
        if attempt >= resource.step_retries:
            raise
        delay = step_retry_delay(resource.step_retry_seconds, attempt)
        context.log.warning(
            f"{error}. Retrying the step ({attempt + 1} of {resource.step_retries}) in "
            f"{delay:.0f} s"
        )
        raise RetryRequested(max_retries=resource.step_retries, seconds_to_wait=delay) from error
    except _PERMANENT as error:
        raise Failure(description=str(error), allow_retries=False) from error
