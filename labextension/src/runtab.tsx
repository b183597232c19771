/**
 * The main-area tabs: a run's detail (tracked, so Lab restores the open ones on reload) and
 * its title, which names the workflow, or the agent for an agent run.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { LabIcon, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IRunActions, IRunServices, RunDetail } from './detail';
import { RunModel } from './liverun';
import { runTitle } from './runtitle';

export class RunDetailWidget extends MainAreaWidget<ReactWidget> {
  constructor(
    readonly model: RunModel,
    actions: IRunActions,
    services: IRunServices,
    icon: LabIcon
  ) {
    const content = ReactWidget.create(<RunDetail model={model} actions={actions} services={services} />);
    content.addClass('clarion-RunDetailContent');
    super({ content });
    this.id = runTabId(model.runId);
    this.addClass('clarion-RunTab');
    this.title.label = `Run ${model.runId.slice(-8)}`;
    this.title.icon = icon;
    this.title.closable = true;
    model.changed.connect(() => {
      const run = model.run;
      if (run) {
        this.title.label = `${runTitle(run, services.agents())} · ${run.status}`;
        this.title.caption = `Run ${run.run_id}`;
      }
    });
    void model.start();
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}

export function runTabId(runId: string): string {
  return `clarion-run-${runId}`;
}
