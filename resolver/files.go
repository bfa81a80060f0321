package resolver

import (
	"fmt"

	"github.com/partroute/partroute/config"
)

// LoadConfigAndView loads the configuration at cfgPath and its file naming view; namingPath,
// when set, overrides the configuration's naming file (a configuration whose naming source is
// not the file needs one). The CLI's commands and the tests load a pair with it.
func LoadConfigAndView(cfgPath, namingPath string) (*config.Config, *View, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	if namingPath == "" {
		if cfg.Naming.Source != config.SourceFile {
			return nil, nil, fmt.Errorf("%s: the naming source is %s; give a naming file with -naming FILE (partroute naming get writes one from etcd)", cfg.Path, cfg.Naming.Source)
		}
		namingPath = cfg.Naming.File
	}
	view, err := LoadViewFile(namingPath, cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, view, nil
}
