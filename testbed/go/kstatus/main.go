// Command kstatus reads Kubernetes objects as JSON on stdin (one per line, a JSON
// array, or a List with items) and prints one JSON line per object with the verdict
// of status.Compute from sigs.k8s.io/cli-utils and from its fork github.com/fluxcd/cli-utils,
// which Helm 4's --wait=watcher and Flux run, so tests can show that both agree.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	fluxcdstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind          string `json:"kind"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	Message       string `json:"message"`
	FluxcdStatus  string `json:"fluxcdStatus"`
	FluxcdMessage string `json:"fluxcdMessage"`
}

func main() {
	in := json.NewDecoder(os.Stdin)
	in.UseNumber() // kstatus reads generations as int64, never float64
	out := json.NewEncoder(os.Stdout)
	for {
		var value any
		if err := in.Decode(&value); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fail("reading stdin: %v", err)
		}
		if err := utiljson.ConvertInterfaceNumbers(&value, 0); err != nil {
			fail("converting numbers: %v", err)
		}
		for _, item := range objects(value) {
			object, ok := item.(map[string]any)
			if !ok {
				fail("not a JSON object: %v", item)
			}
			if err := out.Encode(judge(&unstructured.Unstructured{Object: object})); err != nil {
				fail("writing stdout: %v", err)
			}
		}
	}
}

// objects unwraps a JSON array or a List kind into its items.
func objects(value any) []any {
	if list, ok := value.([]any); ok {
		return list
	}
	if object, ok := value.(map[string]any); ok {
		kind, _ := object["kind"].(string)
		if items, ok := object["items"].([]any); ok && strings.HasSuffix(kind, "List") {
			return items
		}
	}
	return []any{value}
}

func judge(u *unstructured.Unstructured) verdict {
	upstream, err := status.Compute(u)
	if err != nil {
		fail("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	fork, err := fluxcdstatus.Compute(u)
	if err != nil {
		fail("%s %s (fluxcd): %v", u.GetKind(), u.GetName(), err)
	}
	return verdict{
		Kind: u.GetKind(), Name: u.GetName(),
		Status: string(upstream.Status), Message: upstream.Message,
		FluxcdStatus: string(fork.Status), FluxcdMessage: fork.Message,
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
