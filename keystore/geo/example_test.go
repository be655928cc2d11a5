package geo_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/keyedge/keyedge/keystore/geo"
)

// A secret sealed under "region: eu" opens on a node in Germany and not
// on one in the United States, even though both hold the sealed bytes.
func Example() {
	master, err := geo.GenerateMasterKey(nil) // kept by keyctl, never on an edge
	if err != nil {
		log.Fatal(err)
	}
	policy, err := geo.ParsePolicy("region: eu and not country: ru")
	if err != nil {
		log.Fatal(err)
	}
	sealed, err := master.Params.Seal(policy, []byte("secret"))
	if err != nil {
		log.Fatal(err)
	}
	for _, where := range []string{"region: eu, country: de", "region: us, country: us"} {
		attrs, err := geo.ParseAttributes(where)
		if err != nil {
			log.Fatal(err)
		}
		node, err := master.NodeKey(nil, attrs)
		if err != nil {
			log.Fatal(err)
		}
		secret, err := node.Open(policy, sealed)
		fmt.Printf("%s: admitted=%v opened=%q not-admitted=%v\n", attrs, policy.Admits(attrs), secret, errors.Is(err, geo.ErrNotAdmitted))
	}
	// Output:
	// country: de, region: eu: admitted=true opened="secret" not-admitted=false
	// country: us, region: us: admitted=false opened="" not-admitted=true
}

// ParsePolicy points at the token that is wrong.
func ExampleParsePolicy() {
	_, err := geo.ParsePolicy("region: eu && country: de")
	fmt.Println(err)
	// Output:
	// geo: policy "region: eu && country: de": column 12: unexpected character '&'; names and values are letters, digits and _
}
