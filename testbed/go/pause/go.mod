module modeldeploy.invalid/testbed/pause

go 1.24.0
