package store

import "testing"

var benchOrder = []byte(`{"id":"ORD-000001","status":"paid","registered":false,"amount":"149.90","currency":"EUR","customer_email":"j@example.com","customer_name":"JDoe","gateway":"shop","paid":"149.90","refunded":"0.00","flags":[],"txn_ids":["TXN-000001"],"history":[{"at":"2026-12-01T21:43:11.444683239Z","notification":1,"to":"paid","reason":"order created by this event; payment TXN-000001 completed 149.90 EUR; paid 149.90 EUR"}],"created_at":"2026-12-01T21:43:11.444683239Z","updated_at":"2026-12-01T21:43:11.444683239Z","facts":[{"key":"shop\u0000TXN-000001\u0000payment\u0000completed\u0000149.90","notification":1,"type":"payment","status":"completed","txn_id":"TXN-000001","amount":"149.90","currency":"EUR","at":"2026-12-01T21:43:11.444683239Z"}]}`)

// BenchmarkPack measures packing and unpacking a typical order.
func BenchmarkPack(b *testing.B) {
	packed := jsonPacker.pack(benchOrder)
	b.Run("pack", func(b *testing.B) {
		b.SetBytes(int64(len(benchOrder)))
		for b.Loop() {
			jsonPacker.pack(benchOrder)
		}
	})
	b.Run("unpack", func(b *testing.B) {
		b.SetBytes(int64(len(benchOrder)))
		for b.Loop() {
			if _, err := jsonPacker.unpack(packed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(len(packed)), "packed-bytes")
}
