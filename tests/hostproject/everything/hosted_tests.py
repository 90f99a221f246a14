"""The host project's own test, run by ``manage.py test`` / pytest-django in a subprocess: a request
is traced and recorded in the test database while it exists; nothing is exported."""

from django.test import TransactionTestCase

from e2e_otel.bootstrap import get_runtime
from e2e_otel.models import WorkflowSession


class PingTest(TransactionTestCase):
    def test_ping_is_recorded_in_the_test_database(self) -> None:
        response = self.client.get("/ping/")
        self.assertEqual(response.status_code, 200)
        runtime = get_runtime()
        assert runtime is not None
        self.assertEqual(runtime.config.ENVIRONMENT, "testing")
        self.assertIsNone(runtime.exporter)
        self.assertTrue(runtime.force_flush(10))
        self.assertEqual(WorkflowSession.objects.count(), 1)
        # Spans ended after this test (the flush at teardown) still reach the writer.
        self.client.get("/ping/")
