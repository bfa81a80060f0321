package envoyconfig

// The external tests (package envoyconfig_test), which may import packages that import this
// one, run Envoy on the same feature configuration as the unit tests.
const (
	FeatureConfig = featureConfig
	FeatureNaming = featureNaming
)

// WriteFeatureKeys writes the read-your-writes keys file FeatureConfig names into dir.
var WriteFeatureKeys = writeFeatureKeys
