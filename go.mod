module ipnd

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/julienschmidt/httprouter v1.3.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/stripe/stripe-go/v84 v84.4.1 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
