import pytest
import redis.asyncio as redis


@pytest.fixture
async def store(redis_url):
    """A client of the test's Redis, to look at what the instances wrote."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
