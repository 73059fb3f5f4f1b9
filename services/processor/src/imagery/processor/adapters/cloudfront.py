"""CloudFront invalidations (CLOUDFRONT_DISTRIBUTION_ID), for takedowns only: an ordinary
deletion needs none (no URL can be signed for it any more, and those handed out expire within
minutes), and invalidation paths past 1,000 a month are billed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from imagery.common.aws.clients import aws_unavailable
from imagery.processor.ports import Invalidation

if TYPE_CHECKING:
    from types_aiobotocore_cloudfront import CloudFrontClient


class CloudFrontInvalidator:
    def __init__(self, cloudfront: CloudFrontClient, distribution_id: str) -> None:
        self._cloudfront = cloudfront
        self._distribution = distribution_id

    async def invalidate(self, paths: Sequence[str], *, reference: str) -> Invalidation:
        with aws_unavailable("CloudFront CreateInvalidation"):
            answer = await self._cloudfront.create_invalidation(
                DistributionId=self._distribution,
                InvalidationBatch={
                    "Paths": {"Quantity": len(paths), "Items": list(paths)},
                    "CallerReference": reference,
                },
            )
        return Invalidation(answer["Invalidation"]["Id"], tuple(paths))
