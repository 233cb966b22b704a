package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// workerProcess is a worker: this program again, in a process of its own,
// told by its environment where the database and the APIs are.
type workerProcess struct {
	n      int
	cmd    *exec.Cmd
	stdin  io.WriteCloser // closing it stops the worker gracefully
	logs   *syncBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

func startWorker(n int, env []string, verbose bool) (*workerProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this program to start a worker: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, workerEnv+"="+strconv.Itoa(n))
	w := &workerProcess{n: n, cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	var logs io.Writer = w.logs
	if verbose {
		cmd.Env = append(cmd.Env, verboseEnv+"=1")
		logs = io.MultiWriter(w.logs, os.Stderr)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker %d: %w", n, err)
	}
	go func() {
		w.err = cmd.Wait()
		close(w.exited)
	}()
	return w, nil
}

func (w *workerProcess) pid() int { return w.cmd.Process.Pid }

// exitedEarly is an error if the worker has exited: only the parent ends
// a worker.
func (w *workerProcess) exitedEarly() error {
	select {
	case <-w.exited:
		return fmt.Errorf("worker %d exited by itself (%v)%s", w.n, w.err, w.tail())
	default:
		return nil
	}
}

// kill sends SIGKILL (on Windows, TerminateProcess): the worker gets no
// chance to finish anything, as in a crash or an OOM kill.
func (w *workerProcess) kill() error {
	if err := w.exitedEarly(); err != nil {
		return err
	}
	if err := w.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("killing worker %d: %w", w.n, err)
	}
	<-w.exited
	return nil
}

// end kills the worker if it still runs: the parent leaves none behind,
// whatever went wrong.
func (w *workerProcess) end() {
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

// stop closes the worker's stdin, on which it stops River gracefully, and
// waits for it to exit; after timeout it is killed.
func (w *workerProcess) stop(timeout time.Duration) error {
	w.stdin.Close()
	select {
	case <-w.exited:
	case <-time.After(timeout):
		_ = w.cmd.Process.Kill()
		<-w.exited
		return fmt.Errorf("worker %d did not stop within %v%s", w.n, timeout, w.tail())
	}
	if w.err != nil {
		return fmt.Errorf("worker %d: %v%s", w.n, w.err, w.tail())
	}
	return nil
}

// tail is the end of the worker's output, for an error.
func (w *workerProcess) tail() string {
	lines := strings.Split(strings.TrimSpace(w.logs.String()), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return "; its last output:\n  " + strings.Join(lines, "\n  ")
}

// syncBuffer is a bytes.Buffer that exec's copying goroutines and the
// parent may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
