module ipnd

go 1.26.8

require (
	github.com/julienschmidt/httprouter v1.3.0
	github.com/stripe/stripe-go/v84 v84.4.1
	go.etcd.io/bbolt v1.4.3
)

require golang.org/x/sys v0.48.0 // indirect
